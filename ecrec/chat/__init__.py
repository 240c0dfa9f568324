"""Customer-service chat: slots by rules, a dialogue policy, replies in the shopper's language,
sessions that live with the user's profile shard. Ray-free; the Serve shell wires it to the chat route."""
