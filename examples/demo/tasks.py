"""The tutorial's first example, with `celery` -> `celeriac`: no broker to install."""

from celeriac import Celery

# Zero configuration: broker and results share one SQLite file, ./celeriac.db.
app = Celery("demo")


@app.task
def my_task(a, b):
    print("任务函数正在执行....")  # shows in the worker's log
    return a + b


@app.task
def send_registration_mail(address):
    print(f"sending the activation mail to {address}")
    return f"mail sent to {address}"
