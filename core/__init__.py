"""trunkline.core."""
