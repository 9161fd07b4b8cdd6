"""HTTP routes, one module per resource; handlers validate, call the store, shape the answer."""
