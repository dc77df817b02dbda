"""sephnet's model components; importing this package registers all of them."""
