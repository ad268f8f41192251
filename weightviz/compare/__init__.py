"""diff() tensor by tensor and divergence() layer by layer.

``tensordiff`` streams two checkpoints (or models) against each other and ``diffreport``
holds the result; ``layertrace`` runs two models on the same inputs with hooks and
``layerpairs`` pairs their layers and says where the outputs part.
"""
