"""Speed and memory measurements (not tests); each script prints JSON."""
