"""Party-to-party links: typed messages, schemas, transports, the party's ledger."""

from fedacq.link.ledger import PartyLedger
from fedacq.link.link import Link, LinkError, LinkTimeout
from fedacq.link.memory import MemoryLink, memory_pair, run_parties
from fedacq.link.message import BigInts, Message, MessageError, MessageSpec, PartSpec, register

__all__ = ["BigInts", "Link", "LinkError", "LinkTimeout", "MemoryLink", "Message", "MessageError",
           "MessageSpec", "PartSpec", "PartyLedger", "memory_pair", "register", "run_parties"]
