"""Networks: registered layers, one module per architecture family, and the registry that maps names to them."""
