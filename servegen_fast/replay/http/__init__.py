"""HTTP replay: the sender that releases a plan to an OpenAI-compatible server (standard library
only), and `servegen-fast serve`, a minimal such server over the on-device engine."""
