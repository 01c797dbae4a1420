"""The controller and its parts: supervision, restart and stall policies, the instance lock and
start-up hygiene, the stack's state and its publishing. Nothing here imports GStreamer, so
nothing supervised can wedge it.
"""
