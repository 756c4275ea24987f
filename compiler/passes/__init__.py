"""Graph passes, one per module; compiler/driver.py calls them in order."""
