"""The label budget: how many labels a task needs (learning curve and power law), which galaxies to label next
(acquisition scores, MC dropout), which given labels look wrong (confident learning), duplicate galaxies, and
galaxies unlike the training set (the shift score written beside each prediction).
"""
