"""What every stage shares: params.yaml's schema, the project's folders, atomic file writes, the one
table reader, the stage and command shell (one-line errors), the device choice and the code-deps walk.
"""
