# A gunicorn config file (`gunicorn -c gunicorn_conf.py ...`): the arbiter runs it before it forks
# the workers, which inherit the policy. aiohttp's GunicornWebWorker creates its loop with
# asyncio.new_event_loop(), which asks the policy: so it runs on ferroloop.
import ferroloop

ferroloop.install()
