# CPU-only image of the bot. Build: docker build -t bybit-ml-bot .
# Run:   docker run --rm -v "$PWD/data:/data" bybit-ml-bot backtest --data /data/btc_1h.csv.gz
FROM python:3.11-slim AS base

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

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin bot \
    && mkdir -p /home/bot/work /data \
    && chown -R bot:bot /home/bot/work /data
COPY --chown=bot:bot config.yaml /home/bot/work/config.yaml

USER bot
WORKDIR /home/bot/work
VOLUME ["/data"]
ENTRYPOINT ["bot"]
CMD ["--help"]
