"""Export specs of the component kinds: one module per kind."""
