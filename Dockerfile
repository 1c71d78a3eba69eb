# CPU-only image of the bot; docker-compose.yml runs it beside PostgreSQL, Prometheus and the
# dashboard (README, Docker). Alone:
#   docker build -t bybit-ml-bot .
#   docker run --rm -v "$PWD/../shared/data:/data:ro" bybit-ml-bot backtest --data /data/bybit_BTCUSDT_1h.csv.gz
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The CPU wheel of torch first, from PyTorch's CPU index: the default index would pull CUDA (GBs).
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

WORKDIR /opt/bot
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY strategies ./strategies
COPY models ./models
COPY broker ./broker
COPY storage ./storage
RUN pip install . && python -c "import bot.cli"

# Runs as an unprivileged user. /data: the candle files (mounted read-only); checkpoints/ (under
# the working directory, where `bot train` writes by default): a volume, so models outlive the container.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin bot \
    && mkdir -p /home/bot/work/checkpoints /data \
    && chown -R bot:bot /home/bot/work /data
COPY --chown=bot:bot config.yaml /home/bot/work/config.yaml

USER bot
WORKDIR /home/bot/work
# A relative --data FILE is looked up here after the working directory.
ENV BOT_DATA_DIR=/data
VOLUME ["/data", "/home/bot/work/checkpoints"]
ENTRYPOINT ["bot"]
CMD ["--help"]
