"""Where Celery keeps helpers users import (`celery.utils.log`): the same paths here."""
