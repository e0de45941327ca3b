"""trunkline.media."""
