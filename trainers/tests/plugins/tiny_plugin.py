"""A custom trainer as a user would write one: a ClassificationTrainer with its own model."""

from torch import nn

from cvtrain.tasks.classification import ClassificationTrainer


class TinyCNNTrainer(ClassificationTrainer):
    @classmethod
    def default_image_size(cls, architecture):
        return 32

    def create_model(self):
        width = int(self.cfg.architecture.split("-")[-1]) if "-" in self.cfg.architecture else 8
        return nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(width, len(self.class_names)),
        )


class NotATrainer:
    pass
