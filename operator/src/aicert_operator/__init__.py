"""The AICert operator: turns CertifiedTraining resources into gated, sealed training pods.

Handlers (kopf) are thin: they read the world, call the pure `reconcile`, and apply its decision.
"""
