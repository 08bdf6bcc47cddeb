"""Lightning training of the avatar: module, data module, frame samplers."""
