"""`attnreuse analyze`: how alike attention maps are across heads and layers, and a suggested plan."""
