"""Segmentation and tracking: prompts, tracker backends and the step that writes tracks to a store."""
