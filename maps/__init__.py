"""The products: risk surfaces, interactive and static maps, tiles."""
