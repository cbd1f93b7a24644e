"""lb: a two-node dynamic load balancer."""

__version__ = "0.1.0"
