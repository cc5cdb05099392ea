"""The rule catalogue.

Each module holds the rules of one concern; ids are VMR + 3 digits, area by hundreds.
"""
