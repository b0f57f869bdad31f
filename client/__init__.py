"""The hospital side: the Flower ClientApp and the site commands."""
