"""The router's errors, each with a stable code.

    RoutingError                      code
    ├── RulesError                    invalid_rules        the rules file cannot be used (names file, rule, field)
    ├── UnknownModel                  model_not_found      requested model (or `auto`'s target) not in the catalog
    └── NoAvailableRoute              model_not_available  no route of the model has a callable provider

The proxy maps `code` to its OpenAI-style error (404 for the last two) in its one error mapping.
"""

from __future__ import annotations


class RoutingError(Exception):
    code = "routing_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RulesError(RoutingError):
    code = "invalid_rules"


class UnknownModel(RoutingError):
    code = "model_not_found"


class NoAvailableRoute(RoutingError):
    code = "model_not_available"
