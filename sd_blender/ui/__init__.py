"""The user interfaces: the sidebar panel with its operators, properties and preferences, the
runtime state they share, and the command line. They use the scene layer and the core."""
