"""trunkline.control."""
