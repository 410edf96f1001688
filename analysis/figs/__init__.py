"""Figure families, one module each; registered by name in analysis.registry."""
