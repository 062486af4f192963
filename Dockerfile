FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 DATA_DIR=/app/data HOST=0.0.0.0 PORT=8000
WORKDIR /app
COPY pyproject.toml README.md ./
COPY inspector ./inspector
COPY bins ./bins
RUN pip install --no-cache-dir .
COPY manage.py ./
COPY templates ./templates
COPY static ./static
RUN useradd --create-home inspector && mkdir -p /app/data && chown inspector /app/data
USER inspector
VOLUME /app/data
EXPOSE 8000
CMD ["sh", "-c", "python manage.py migrate --noinput && exec daphne --bind \"$HOST\" --port \"$PORT\" --server-name '' --verbosity 0 inspector.asgi:application"]
