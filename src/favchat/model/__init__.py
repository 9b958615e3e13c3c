"""The FaVChat model: configuration, vision towers, prompt-query levels, modeling and processor."""
