"""Example lossd plugin (test fixture)."""
