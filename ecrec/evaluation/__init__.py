"""Offline evaluation: datasets and splits, methods behind one interface, the harness, replays."""
