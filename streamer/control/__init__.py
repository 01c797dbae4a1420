"""The controller and its parts: supervision, restart and stall policies, the instance lock,
the stack's state. Nothing here imports GStreamer, so nothing supervised can wedge it.
"""
