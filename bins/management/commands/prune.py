from django.core.management.base import BaseCommand

from bins.models import Bin, Capture


class Command(BaseCommand):
    help = "Delete bins unused for BIN_EXPIRE_DAYS and keep CAPTURES_PER_BIN captures per bin."

    def handle(self, *args: object, **options: object) -> None:
        expired = Bin.delete_expired()
        pruned = Capture.prune_all()
        self.stdout.write(f"{expired} expired bin(s) deleted, {pruned} old capture(s) pruned")
