"""CityBrain (城市大脑): city operations platform for district and city governments."""

__version__ = "0.1.0"
