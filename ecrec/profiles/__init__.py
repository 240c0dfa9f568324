"""Live user profiles: events, the profile arithmetic and its compact codec, shards and their durable stores."""
