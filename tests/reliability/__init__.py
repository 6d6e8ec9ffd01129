"""Faults caused on purpose: kills and crashes, concurrent writers, bad data, damaged files, divergence."""
