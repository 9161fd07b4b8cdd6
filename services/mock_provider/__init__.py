"""A realistic fake of SMS/MMS, email and WhatsApp provider APIs, with a ledger of what it accepted."""
