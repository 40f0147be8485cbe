"""Router: picks routes (rules, auto, health, same-family fallback). Skeleton until the router issue."""
