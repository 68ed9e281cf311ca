"""Voice turns of Xiaozhi devices: from device audio to the spoken reply."""
