"""trunkline.operator."""
