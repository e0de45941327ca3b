"""trunkline.edge."""
