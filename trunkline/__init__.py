"""trunkline: a Kubernetes-native, distributed SIP trunking platform."""

__version__ = "0.1.0"
