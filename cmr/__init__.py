"""The CMR domain: DICOM reading, de-identification, attribute normalisation,
MR signal models, the synthetic multi-site phantom and the local case store.

Nothing here knows about Flower, tasks, the server or the client.
"""
