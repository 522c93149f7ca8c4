"""The operators' usage dashboard in the admin: characters and charges per day and per model, top users,
upstream error rate per connection, for a range of billing days, with CSV export (docs/operations.md)."""
