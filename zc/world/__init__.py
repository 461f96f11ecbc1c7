"""The shapes world, which knows no network: scenes and their prompts (shapes), what a control can be
told about a scene (conditions), the paired data every control trains on (fill50k), and the measures
that read a generated image back (metrics, fidelity). The core trains and evaluates on it."""
