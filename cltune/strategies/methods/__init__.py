"""Named methods: one file per strategy, a preset of the engine and its plugins, registered in one line."""
