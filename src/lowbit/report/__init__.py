"""Reports: the JSON schema, the terminal table."""
