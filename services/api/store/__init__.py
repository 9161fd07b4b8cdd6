"""The API's SQL, one module per resource; every statement is scoped to a tenant."""
