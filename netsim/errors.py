"""The error every part of scenario parsing raises (its own module, so that the section
parsers, such as ``netsim.media_spec``, and ``netsim.scenario`` need not import each other)."""


class ScenarioError(ValueError):
    """A scenario file that cannot be run; the message names the offending key."""
