"""Face geometry shared by the stages: landmarks, FFHQ alignment, head pose, attribute models.

Modules here import mediapipe, OpenCV, torch or deepface at top level, so stage
modules import them only inside ``setup()``.
"""
