"""mmssl: self-supervised learning for images, video, audio and captions."""

__version__ = "0.1.0"
