"""Task trainers: object detection and classification on top of BaseTrainer."""
